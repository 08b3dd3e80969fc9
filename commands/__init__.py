"""The `textstream` command line, above both packages: it may import `worker` and `training`,
neither of which imports it. One module per command group; heavy imports (TensorFlow, Faust) happen
inside the commands so that `--help` and the client commands start at once."""
