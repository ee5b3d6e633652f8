import openbayes_serving as serv


class Predictor:
    def infer(self, json):
        return json


if __name__ == "__main__":
    serv.run(Predictor)
