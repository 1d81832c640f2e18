"""The embedded demo reward model, demo-minilm-rm: its generated preference data and training.

Nothing is imported here, so that `model_store.demo.build` stays importable without torch.
"""
