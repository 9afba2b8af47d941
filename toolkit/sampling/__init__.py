"""Generation helpers shared by the generate job and training previews: prompts, samplers, LoRA stacks, grids, PNG metadata."""
