"""Structure-keeping generation's generic parts: control-image preprocessors (``names``: what configs may say;
``preprocess``: numpy + PIL image ops; ``estimators``: depth and pose from a user-given model), the control and
IP-Adapter inputs of a generation and their dry-run checks (``inputs``), and the edge agreement the evaluate job
reports (``edges``). Nothing here knows an architecture."""
