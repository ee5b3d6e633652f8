"""A 0.5.0 predictor reading a large form field and an uploaded file through Flask.

``?via=global`` reads them from Flask's global ``request`` instead of the injected one.
"""

import hashlib

import flask

import openbayes_serving as serv


def digest(data):
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class Predictor:
    def predict(self, request, params):
        source = flask.request if params.get("via") == "global" else request
        if "image" in source.form:
            return {"form": digest(source.form["image"].encode("latin-1"))}
        upload = source.files["image"]
        return {"file": digest(upload.read()), "name": upload.filename}


if __name__ == "__main__":
    serv.run(Predictor)
