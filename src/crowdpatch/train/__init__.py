"""Step 3: classifiers trained with attention masks, and evaluated on bias-conflicting data.

Import submodules directly (``crowdpatch.train.trainer``...): this package stays light so that
``python -m crowdpatch.train`` under torchrun starts fast.
"""
