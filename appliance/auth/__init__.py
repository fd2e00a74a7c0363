"""Who may log in: password policy, lock-out, the LDAP directory, the login.

:mod:`~appliance.auth.passwords` and :mod:`~appliance.auth.lockout` are
rules; :mod:`~appliance.auth.ldap` talks to a directory;
:mod:`~appliance.auth.login` puts them together for the web's login form.
Nothing here knows the web: it works on ``app.db`` connections and plain
values, with the time passed in.
"""
