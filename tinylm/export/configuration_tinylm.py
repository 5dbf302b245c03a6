"""TinyLMConfig: the Hugging Face config of an exported tinylm model (copied into the export as is).

The fields are those of tinylm.config.ModelConfig (the one source of truth, written by the export
from the checkpoint), plus the special token ids. The usual Hugging Face names are aliases
(`hidden_size` = d_model, `num_hidden_layers` = n_layer, ...). Imports only transformers.
"""

from transformers import PretrainedConfig


class TinyLMConfig(PretrainedConfig):
    model_type = "tinylm"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "max_position_embeddings": "max_seq_len",
        "layer_norm_eps": "norm_eps",
        "initializer_range": "init_std",
    }

    def __init__(
        self,
        family: str = "gpt",  # gpt (implemented); bert, mlstm (planned)
        vocab_size: int = 2048,
        max_seq_len: int = 256,
        n_layer: int = 4,
        n_head: int = 4,
        d_model: int = 256,
        d_ff: int = 0,  # 0 means 4 * d_model
        dropout: float = 0.0,
        bias: bool = False,
        norm_eps: float = 1e-5,
        tie_embeddings: bool = True,
        init_std: float = 0.02,
        pad_token_id: int = 0,
        bos_token_id: int = 2,
        eos_token_id: int = 3,
        mask_token_id: int = 4,
        **kwargs,
    ):
        self.family = family
        self.vocab_size = vocab_size
        self.max_seq_len = max_seq_len
        self.n_layer = n_layer
        self.n_head = n_head
        self.d_model = d_model
        self.d_ff = d_ff
        self.dropout = dropout
        self.bias = bias
        self.norm_eps = norm_eps
        self.tie_embeddings = tie_embeddings
        self.init_std = init_std
        self.mask_token_id = mask_token_id
        kwargs["tie_word_embeddings"] = tie_embeddings
        kwargs.setdefault("is_decoder", family == "gpt")
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)

    @property
    def intermediate_size(self) -> int:
        return self.d_ff or 4 * self.d_model
