"""The AWS Price List API's GetProducts, which moto does not serve, answered from recorded real
replies, so the controller's Price List client and parser meet what AWS itself sends.

STOKER_PRICE_LIST_RECORDINGS names a directory of recorded GetProducts items, one JSON document
per file, as AWS returns each element of a reply's `PriceList` (hack/install-emulator.sh fetches
them). GetProducts answers with the items its `TERM_MATCH` filters select, `MaxResults` per
page, each page after the first asked for with the previous page's `NextToken`, as the API
pages. A filter names a product attribute, matched without regard to case as the API matches
field names; `productFamily` is the product's family and `ServiceCode` the item's service. Items
recorded before the Price List gained the `regionCode` attribute name their region only by
`location` ("US East (N. Virginia)"); they are given the region code whose description in
botocore's endpoint data is that location. Without recordings, or for any other Price List
action, the request goes on to moto as before.
"""

import json
import os

import botocore.loaders
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

TARGET_PREFIX = "AWSPriceListService."


def _region_codes_by_location():
    endpoints = botocore.loaders.Loader().load_data("endpoints")
    return {
        region["description"]: code
        for partition in endpoints["partitions"]
        for code, region in partition["regions"].items()
        if "description" in region
    }


def _load(directory):
    locations = _region_codes_by_location()
    items = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json"):
            with open(os.path.join(directory, name)) as f:
                item = json.load(f)
            attributes = item["product"]["attributes"]
            if "regionCode" not in attributes and attributes.get("location") in locations:
                attributes["regionCode"] = locations[attributes["location"]]
            items.append(item)
    return items


def _selects(item, filters):
    attributes = {k.lower(): v for k, v in item["product"]["attributes"].items()}
    attributes["productfamily"] = item["product"].get("productFamily")
    attributes["servicecode"] = item["serviceCode"]
    return all(
        f.get("Type") == "TERM_MATCH" and attributes.get(f["Field"].lower()) == f["Value"] for f in filters
    )


def get_products(items, request):
    """One page of the reply to a GetProducts request."""
    selected = [
        item
        for item in items
        if item["serviceCode"] == request.get("ServiceCode", item["serviceCode"])
        and _selects(item, request.get("Filters", []))
    ]
    start = int(request.get("NextToken") or 0)
    end = start + int(request.get("MaxResults") or 100)
    reply = {"FormatVersion": request.get("FormatVersion", "aws_v1"), "PriceList": [json.dumps(i) for i in selected[start:end]]}
    if end < len(selected):
        reply["NextToken"] = str(end)
    return reply


recordings = os.environ.get("STOKER_PRICE_LIST_RECORDINGS")
if recordings:
    recorded_items = _load(recordings)
    moto_dispatch = DomainDispatcherApplication.__call__

    def dispatch(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target != TARGET_PREFIX + "GetProducts":
            return moto_dispatch(self, environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        request = json.loads(environ["wsgi.input"].read(length) or b"{}")
        body = json.dumps(get_products(recorded_items, request)).encode()
        start_response("200 OK", [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))])
        return [body]

    DomainDispatcherApplication.__call__ = dispatch
