"""The bundled XNAT-compatible server (``xnat-prep server``): a real HTTP server with persistent
storage that the unmodified ``xnat`` (xnatpy) and ``pyxnat`` clients work against.

Modules: ``http`` (HTTP plumbing), ``app`` (routing, small endpoints),
``archive`` (project hierarchy: ``resolve`` URIs, ``listings`` and documents, ``files``,
``writes``), ``access`` (role checks), ``prearchive`` + ``importer`` (import service, prearchive),
``dicomdump``, ``store`` (SQLite + blobs), ``auth`` (users, sessions, tokens, roles), ``faults``
(fault injection), ``zipstream``, ``testing`` (``running_server()`` for tests); its commands are
``xnat_prep.commands.server`` and ``.users``.
"""
