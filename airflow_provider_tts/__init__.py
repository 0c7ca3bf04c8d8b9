"""Apache Airflow provider for asynchronous text-to-speech job APIs (Camb.ai and RevidAPI).

Kept import-free on purpose: this module runs whenever a DAG file imports anything from the
package, so it must not pull in ``aiohttp``, ``requests`` or Airflow itself.
"""

__version__ = "0.1.0"
