import openbayes_serving as serv


class Predictor:
    def warmup(self):
        raise ValueError("the warm-up batch does not fit the model")

    def predict(self, json):
        return json


if __name__ == "__main__":
    serv.run(Predictor)
