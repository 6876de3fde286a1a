"""The bottom layer every other package may import: time and id conventions. Imports nothing of ours."""
