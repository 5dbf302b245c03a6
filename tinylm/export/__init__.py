"""Export to Hugging Face: `python -m tinylm.export ckpt=RUN_DIR out=DIR` (tinylm.export.hf.export_hf).

configuration_tinylm.py and modeling_tinylm*.py (layers, gpt, bert, mlstm) are the files copied into
every export; they import only torch and transformers.
"""
