"""A predictor written against Flask's globals, as some 0.5.0 predictors are."""

import flask
from flask import jsonify, request

import openbayes_serving as serv


class Predictor:
    def predict(self):
        body = request.get_json()
        if body.get("response"):
            return flask.Response(
                "custom body", status=201, headers={"X-Mine": "yes"}, mimetype="text/x-custom"
            )
        return jsonify(
            {"path": request.path, "x": request.args.get("x"), "body": body, "text": "中文"}
        )


if __name__ == "__main__":
    serv.run(Predictor)
