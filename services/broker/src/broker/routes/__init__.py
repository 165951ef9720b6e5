"""HTTP endpoints, one module per endpoint group: thin handlers that read the request, call the
layers below (``admin``, ``login``, ``oauth``, ``http``) and shape the response."""
