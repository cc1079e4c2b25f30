"""Random-weight checkpoint sizes for `make-toy --size` and bench (torch-free, so the CLI's parser stays light)."""

# (text_config, vision_config) overrides of the toy.
_GEMMA2_3B = {"hidden_size": 2304, "intermediate_size": 9216, "num_attention_heads": 8, "num_key_value_heads": 4,
              "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096, "attn_logit_softcapping": 50.0,
              "final_logit_softcapping": 30.0}
BENCH_SIZES = {
    # 4096 image tokens through the 3B's attention shapes: what attention costs at 896 px, in 4 layers, with a
    # small vision tower and the toy vocabulary so the decoder's attention is what the numbers measure.
    "896-attn": ({**_GEMMA2_3B, "num_hidden_layers": 4},
                 {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 2, "num_attention_heads": 6,
                  "patch_size": 14, "image_size": 896}),
    # PaliGemma 2 3B at 224 px, every shape real (257k-entry head included): 3.0B parameters, 12 GB in float32.
    "3b-224": ({**_GEMMA2_3B, "num_hidden_layers": 26, "vocab_size": 257216},
               {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
                "patch_size": 14, "image_size": 224}),
    # PaliGemma 2 10B at 224 px (Gemma 2 9B's decoder, the same SigLIP): 9.7B parameters, 19 GB in bfloat16,
    # written one shard at a time; for the by-hand int4 run in the README.
    "10b-224": ({**_GEMMA2_3B, "hidden_size": 3584, "intermediate_size": 14336, "num_attention_heads": 16,
                 "num_key_value_heads": 8, "num_hidden_layers": 42, "vocab_size": 257216},
                {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
                 "patch_size": 14, "image_size": 224}),
}
