"""Input errors, in a module without torch: the ROS adapters refuse bad input before loading any model code."""


class InvalidInputError(ValueError):
    """An image or instruction the policy cannot use; nothing was changed by it."""
