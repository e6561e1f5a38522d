"""The function's own module that happens to be called plldb."""

VALUE = "the function's own plldb"
