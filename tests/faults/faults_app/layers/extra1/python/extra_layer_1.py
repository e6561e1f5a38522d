"""Extra layer 1: one of the five that fill FaultsCrowded's layer slots."""

LAYER_NUMBER = 1
