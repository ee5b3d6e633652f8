import openbayes_serving as serv


class Predictor:
    def predict(self, request):
        return {
            "class": f"{type(request).__module__}.{type(request).__name__}",
            "method": request.method,
            "json": request.get_json(silent=True),
            "args": request.args.to_dict(),
            "content_type": request.content_type,
            "form": request.form.to_dict(),
            "length": len(request.get_data()),
            "header": request.headers.get("X-Custom"),
        }


if __name__ == "__main__":
    serv.run(Predictor)
