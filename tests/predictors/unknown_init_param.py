import openbayes_serving as serv


class Predictor:
    def __init__(self, modle):
        self.model = modle

    def predict(self, json):
        return json


if __name__ == "__main__":
    serv.run(Predictor)
