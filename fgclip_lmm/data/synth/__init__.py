"""The synthetic fine-grained world: `world` (attributes, scenes, phrases), `render` (drawing), `records` and
`benchmarks` (official-format rows), `writing` (deterministic files), `generate` (the `synth` job and the
manifest keys), `manifest` (reading a generated world)."""
