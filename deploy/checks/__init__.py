"""The checks behind ``make check-deploy`` (run through ``deploy/check.py``).

``problems`` collects what is wrong and reads YAML; ``kustomize`` renders a kustomization;
``kubernetes`` validates the rendered objects; ``broker_settings`` loads a broker config the
way a container would; ``compose`` and ``dockerfiles`` check those files.
"""
