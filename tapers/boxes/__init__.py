"""The local box cache: recipes, building, looking boxes up."""
