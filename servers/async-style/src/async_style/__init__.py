"""Starlette (ASGI) hash server on granian: the stand-in for Rust's hyper + tokio."""
