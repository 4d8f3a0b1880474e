// CPU backend: fp32 GPT-2 layers in forward/backward pairs.
