"""The queue for requests that fit a user's quota but not the free GPUs."""
