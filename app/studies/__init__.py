"""Studies and their protocol versions, loaded from surveys/studies/*.yaml."""
