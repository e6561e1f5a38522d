"""Extra layer 5: one of the five that fill FaultsCrowded's layer slots."""

LAYER_NUMBER = 5
