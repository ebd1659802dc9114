from .cli import main

# Worker processes start by the spawn method, which imports the parent's main module
# again: only the real one may run the program.
if __name__ == "__main__":
    main()
