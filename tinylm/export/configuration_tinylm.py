"""TinyLMConfig: the Hugging Face config of an exported tinylm model (copied into the export as is).

The fields are those of tinylm.config.ModelConfig (the one source of truth, written by the export
from the checkpoint), plus the training objective and the special token ids. The usual Hugging Face
names are aliases (`hidden_size` = d_model, `num_hidden_layers` = n_layer, ...). Imports only
transformers.

`family` picks the architecture (gpt, bert, mlstm); `objective` is the one the run trained with
(clm, mlm, hybrid, distill). It decides how AutoModel runs a BERT: bidirectionally after mlm or
hybrid (GPT-BERT), causally after clm / distill. AutoModelForCausalLM always runs causally and
AutoModelForMaskedLM always bidirectionally.
"""

from transformers import PretrainedConfig

CAUSAL_OBJECTIVES = ("clm", "distill")


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
        family: str = "gpt",  # gpt | bert | mlstm
        objective: str = "clm",  # clm | mlm | hybrid | distill (how the model was trained)
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
        # mLSTM
        mlstm_form: str = "chunkwise",  # how tinylm trained it; the export computes the parallel form
        mlstm_chunk_size: int = 64,
        mlstm_proj_factor: float = 2.0,
        mlstm_conv_kernel: int = 4,
        mlstm_qkv_blocksize: int = 4,
        mlstm_forget_gate: str = "sigmoid",
        mlstm_swa_every: int = 0,
        mlstm_swa_window: int = 128,
        # BERT
        bert_norm: str = "pre",
        bert_positions: str = "relative",
        bert_rel_buckets: int = 32,
        bert_rel_max_distance: int = 128,
        bert_rope_base: float = 10000.0,
        bert_elc: bool = True,
        bert_arch: str = "ltg",
        pad_token_id: int = 0,
        bos_token_id: int = 2,
        eos_token_id: int = 3,
        mask_token_id: int = 4,
        **kwargs,
    ):
        self.family = family
        self.objective = objective
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
        self.mlstm_form = mlstm_form
        self.mlstm_chunk_size = mlstm_chunk_size
        self.mlstm_proj_factor = mlstm_proj_factor
        self.mlstm_conv_kernel = mlstm_conv_kernel
        self.mlstm_qkv_blocksize = mlstm_qkv_blocksize
        self.mlstm_forget_gate = mlstm_forget_gate
        self.mlstm_swa_every = mlstm_swa_every
        self.mlstm_swa_window = mlstm_swa_window
        self.bert_norm = bert_norm
        self.bert_positions = bert_positions
        self.bert_rel_buckets = bert_rel_buckets
        self.bert_rel_max_distance = bert_rel_max_distance
        self.bert_rope_base = bert_rope_base
        self.bert_elc = bert_elc
        self.bert_arch = bert_arch
        self.mask_token_id = mask_token_id
        kwargs["tie_word_embeddings"] = tie_embeddings
        kwargs.setdefault("is_decoder", self.body_is_causal)
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)

    @property
    def body_is_causal(self) -> bool:
        """How AutoModel runs: causal for gpt and mlstm, and for a bert trained with clm / distill."""
        return self.family != "bert" or self.objective in CAUSAL_OBJECTIVES

    @property
    def intermediate_size(self) -> int:
        return self.d_ff or 4 * self.d_model
