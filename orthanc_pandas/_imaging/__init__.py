"""Pure imaging code: geometry, decoding, assembly into volumes, masks, interop. No HTTP."""
