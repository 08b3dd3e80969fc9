"""textstream worker: the streaming runtime (config; the stages decode, batching, predict, route, publish; reload, bundle, registry; the Faust app)."""
