import openbayes_serving as serv


class Predictor:
    def __init__(self, onnx):
        self.session = onnx

    def predict(self, json):
        return json


if __name__ == "__main__":
    serv.run(Predictor)
