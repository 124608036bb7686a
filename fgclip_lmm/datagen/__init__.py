"""Build FineHARD-style training data (long/short captions, region boxes, hard negatives) from your own images.

Steps (`fgclip-lmm datagen STEP`, see `fgclip_lmm.datagen.cli`): recaption -> ground -> negatives, then check;
`merge` joins the per-rank progress of a sharded run. Each step reads and writes the official FineHARD JSON schema.
"""
