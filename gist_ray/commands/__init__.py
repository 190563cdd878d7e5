"""The bodies of the ``gist-ray`` commands, one module each; :mod:`gist_ray.cli` imports a command's module only
when that command runs, so ``gist-ray methods`` never pays for Ray's imports and ``gist-ray --help`` for none."""
