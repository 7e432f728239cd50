print("placeholder-to-compile")
