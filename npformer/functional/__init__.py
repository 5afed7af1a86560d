"""Forward/backward pairs for every Transformer operation: ``y, cache = NAME_forward(...)``,
``grads = NAME_backward(dy, cache)``. Each pair lives in a module named for what it computes."""
