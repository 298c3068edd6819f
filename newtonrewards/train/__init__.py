"""Post-training of diffusers video models: adapters, data, prompt cache, SFT, NewtonRewards reward fine-tuning."""
