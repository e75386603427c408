"""Facts of the guide that the tools refer to: its "Summary of Key Changes" table."""

# Rows of the guide's summary table (14x16 -> 32x32), as preset keys, in the table's order.
SUMMARY_TABLE_KEYS = (
    "dsr.batch_size",
    "dsr.learning_rate",
    "dsr.lambda_identity",
    "dsr.lambda_perceptual",
    "dsr.lambda_tv",
    "dsr.base_channels",
    "finetune.stage2_epochs",
    "finetune.batch_size",
    "finetune.arcface_margin",
    "finetune.weight_decay",
)
VLR_SIZE_KEYS = ("data.vlr_width", "data.vlr_height")
