"""Serve: a registered model over HTTP with Ray Serve.

- `app`: the deployment, its options and `serve_forever`;
- `batching`: the micro-batcher that groups concurrent requests;
- `http`: request parsing and error answers.
"""

from .._lazy import lazy_exports

_EXPORTS = {"ServeOptions": "app", "ServeConfigError": "app", "build_app": "app", "app_builder": "app",
            "serve_forever": "app"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
