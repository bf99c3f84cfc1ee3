"""The built-in modality plug-ins; importing this module registers them in ``core.modality.MODALITIES``.

Imported lazily by ``core.modality`` on the first registry lookup, so importing any single modality package
stays cheap and free of cycles. A plug-in of your own registers itself the same way when its module is imported.
"""

from ssl_tasks.modalities.graph import modality as _graph  # noqa: F401  (registration)
from ssl_tasks.modalities.image import modality as _image  # noqa: F401
from ssl_tasks.modalities.image_text import modality as _image_text  # noqa: F401
from ssl_tasks.modalities.speech import modality as _speech  # noqa: F401
from ssl_tasks.modalities.text import modality as _text  # noqa: F401
from ssl_tasks.modalities.video import modality as _video  # noqa: F401
