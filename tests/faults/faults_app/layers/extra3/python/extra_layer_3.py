"""Extra layer 3: one of the five that fill FaultsCrowded's layer slots."""

LAYER_NUMBER = 3
