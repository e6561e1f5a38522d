VALUE = "from a folder named by a .pth file of the function's code"
