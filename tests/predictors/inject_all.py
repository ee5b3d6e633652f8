"""Reports what each request-side name received."""

import base64

import openbayes_serving as serv


def describe(value):
    if isinstance(value, bytes):
        return {"type": "bytes", "base64": base64.b64encode(value).decode()}
    return {"type": type(value).__name__, "value": value}


class AnyName:
    def predict(self, payload, data, params, args, headers):
        return {
            "payload": describe(payload),
            "data": describe(data),
            "params": params.to_dict(flat=False),
            "args_is_params": args == params,
            "header": headers.get("X-Custom"),
            "header_lower": headers.get("x-custom"),
        }


if __name__ == "__main__":
    serv.run(AnyName)
