"""The quarantine helper: a root service on a unix socket that shows, releases and deletes held
messages for the console (Postfix's postsuper serves root only), and the console's client of it."""
