"""What a person may ask for and how they ask: the profile catalogue (``profiles``), the request
and its validation (``request``), the spawn form's model and page (``form``, ``templates/``) and
the messages that explain a refusal (``messages``). Pure; the spawner mixin uses them."""
