"""Training: the one visible loop (loop.py) and what it stands on.

run.py sets a run up (spec -> data -> model -> run dir) and hands it to loop.py; losses.py,
adapters.py, batching.py, checkpoint.py, distributed.py and callbacks.py each own one concern.
Import from the submodules; this package keeps `import tunesmith.train` free of torch.
"""
