"""Pure tensor geometry for equirectangular (ERP) panoramas. No file I/O here except pose JSON parsing."""
