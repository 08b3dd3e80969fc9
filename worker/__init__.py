"""textstream worker: the streaming runtime (config, codec, bundle, registry, pipeline, Faust app)."""
