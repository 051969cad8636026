"""The 'envs' hub service: builds the profiles' missing environments in the background."""
