"""The ways to hold a backward besides a record: an ``autograd.Function`` or custom op
(:func:`op_model`) and numpy layers (:func:`numpy_model`), each made into a :class:`Model`."""
