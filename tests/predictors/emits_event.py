import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        serv.emit_event("seen", {"x": json.get("x")})
        return {"ok": True}


if __name__ == "__main__":
    serv.run(Predictor)
