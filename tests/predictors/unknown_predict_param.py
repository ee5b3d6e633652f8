import openbayes_serving as serv


class Predictor:
    def predict(self, jsn):
        return jsn


if __name__ == "__main__":
    serv.run(Predictor)
