import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        yield "a"

    def postprocess(self, y):
        return y


if __name__ == "__main__":
    serv.run(Predictor)
