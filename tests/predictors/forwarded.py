import openbayes_serving as serv


class Predictor:
    def predict(self, request):
        return {"remote_addr": request.remote_addr, "scheme": request.scheme}


if __name__ == "__main__":
    serv.run(Predictor)
