"""`fs-serve`: the `Device` object and every served model's input vector over HTTP (`app`), with API
keys (`keys`) and its OpenAPI document (`openapi`); started by `cli`."""
